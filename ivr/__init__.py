"""The 120 telephony and IVR server: Asterisk takes the calls, this package runs them."""
