"""python-sandbox: runs untrusted Python in contained child interpreters (port 3011)."""
