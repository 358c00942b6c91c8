"""The cluster: Kamailio at the SIP edge in front of several Asterisk nodes, with shared state."""
