"""Development helpers: throwaway PostgreSQL and MariaDB servers for tests, demo and benchmark."""
