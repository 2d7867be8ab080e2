"""PostgreSQL wire protocol: message codecs and password authentication."""
