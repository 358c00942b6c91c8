"""Dialplans: what admins edit (dialplans/*.yaml), checked before it goes live, versioned."""
