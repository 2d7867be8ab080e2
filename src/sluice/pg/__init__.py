"""PostgreSQL sessions: client sessions, backend connections, pools, proxies."""
