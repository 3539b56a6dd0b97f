"""The supervisor daemon. Imported only by the daemon process, never by the CLI's light commands."""
