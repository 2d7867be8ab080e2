"""Several worker processes sharing the listeners: the supervisor, the peer channel, the slot."""
