"""Development helpers: throwaway PostgreSQL servers for tests, the demo and the benchmark."""
