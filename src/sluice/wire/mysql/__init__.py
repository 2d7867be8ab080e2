"""MySQL/MariaDB client/server protocol: packet codecs, authentication, reply tracking."""
