"""The cogoctl command line. Thin: it talks to the supervisor through cogoctl.client."""
