"""Automatic call distribution: skill queues in Redis and the atomic match of caller to agent."""
