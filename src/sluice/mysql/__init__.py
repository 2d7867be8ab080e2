"""MySQL and MariaDB sessions: client sessions, backend connections, pools, proxies."""
