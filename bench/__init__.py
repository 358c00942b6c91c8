"""make bench: how many calls, how fast, against plain Asterisk on the same machine."""
