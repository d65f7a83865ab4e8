"""Integration tests on the real local stack: nginx, dnsmasq and agent processes."""
