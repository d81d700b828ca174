"""What every long-running part of the daemon shares: task sets and backoff (`aio`), logging,
systemd notification and the control socket. Imports only the core and the config.
"""
