"""Numbers of the MySQL client/server protocol: capabilities, status flags, commands, errors.

Design: plain module-level integers (not enums), because they are combined as
bit masks and compared on the relay path, where an enum look-up costs more
than it explains. Names are MySQL's own (include/mysql_com.h, mysqld_error.h),
so a reader can look each one up.

MariaDB announces itself by *clearing* CLIENT_LONG_PASSWORD (which MariaDB
calls CLIENT_MYSQL) and carries extended capabilities (progress reports,
metadata caching, extended type info, bulk execute) in four of the reserved
handshake bytes. Sluice keeps CLIENT_MYSQL set on both sides, so neither a
client nor a server ever uses those extensions through it and every result
set has the classic layout.
"""

from __future__ import annotations

from typing import Final

# ---- capability flags (int4 in the handshake packets) ------------------------

CLIENT_LONG_PASSWORD: Final = 1 << 0  # MariaDB: CLIENT_MYSQL (clear it = "I am MariaDB")
CLIENT_FOUND_ROWS: Final = 1 << 1
CLIENT_LONG_FLAG: Final = 1 << 2
CLIENT_CONNECT_WITH_DB: Final = 1 << 3
CLIENT_NO_SCHEMA: Final = 1 << 4
CLIENT_COMPRESS: Final = 1 << 5
CLIENT_ODBC: Final = 1 << 6
CLIENT_LOCAL_FILES: Final = 1 << 7
CLIENT_IGNORE_SPACE: Final = 1 << 8
CLIENT_PROTOCOL_41: Final = 1 << 9
CLIENT_INTERACTIVE: Final = 1 << 10
CLIENT_SSL: Final = 1 << 11
CLIENT_IGNORE_SIGPIPE: Final = 1 << 12
CLIENT_TRANSACTIONS: Final = 1 << 13
CLIENT_RESERVED: Final = 1 << 14
CLIENT_SECURE_CONNECTION: Final = 1 << 15  # "RESERVED2" in MySQL 8: 4.1 authentication
CLIENT_MULTI_STATEMENTS: Final = 1 << 16
CLIENT_MULTI_RESULTS: Final = 1 << 17
CLIENT_PS_MULTI_RESULTS: Final = 1 << 18
CLIENT_PLUGIN_AUTH: Final = 1 << 19
CLIENT_CONNECT_ATTRS: Final = 1 << 20
CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA: Final = 1 << 21
CLIENT_CAN_HANDLE_EXPIRED_PASSWORDS: Final = 1 << 22
CLIENT_SESSION_TRACK: Final = 1 << 23
CLIENT_DEPRECATE_EOF: Final = 1 << 24
CLIENT_OPTIONAL_RESULTSET_METADATA: Final = 1 << 25  # never offered: changes result set layout
CLIENT_ZSTD_COMPRESSION_ALGORITHM: Final = 1 << 26
CLIENT_QUERY_ATTRIBUTES: Final = 1 << 27  # never offered: changes COM_QUERY layout
CLIENT_MULTI_FACTOR_AUTHENTICATION: Final = 1 << 28
CLIENT_CAPABILITY_EXTENSION: Final = 1 << 29
CLIENT_SSL_VERIFY_SERVER_CERT: Final = 1 << 30
CLIENT_REMEMBER_OPTIONS: Final = 1 << 31

# What Sluice can relay faithfully. The proxy offers (server side) and asks for
# (backend side) at most these; CLIENT_SSL is added only where TLS is available,
# CLIENT_LOCAL_FILES only where LOAD DATA LOCAL is allowed.
SUPPORTED_CAPABILITIES: Final = (
    CLIENT_LONG_PASSWORD
    | CLIENT_FOUND_ROWS
    | CLIENT_LONG_FLAG
    | CLIENT_CONNECT_WITH_DB
    | CLIENT_NO_SCHEMA
    | CLIENT_ODBC
    | CLIENT_IGNORE_SPACE
    | CLIENT_PROTOCOL_41
    | CLIENT_INTERACTIVE
    | CLIENT_IGNORE_SIGPIPE
    | CLIENT_TRANSACTIONS
    | CLIENT_SECURE_CONNECTION
    | CLIENT_MULTI_STATEMENTS
    | CLIENT_MULTI_RESULTS
    | CLIENT_PS_MULTI_RESULTS
    | CLIENT_PLUGIN_AUTH
    | CLIENT_CONNECT_ATTRS
    | CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA
    | CLIENT_SESSION_TRACK
    | CLIENT_DEPRECATE_EOF
)

# ---- server status flags (int2 in OK and EOF packets) ------------------------

SERVER_STATUS_IN_TRANS: Final = 1 << 0
SERVER_STATUS_AUTOCOMMIT: Final = 1 << 1
SERVER_MORE_RESULTS_EXISTS: Final = 1 << 3
SERVER_QUERY_NO_GOOD_INDEX_USED: Final = 1 << 4
SERVER_QUERY_NO_INDEX_USED: Final = 1 << 5
SERVER_STATUS_CURSOR_EXISTS: Final = 1 << 6
SERVER_STATUS_LAST_ROW_SENT: Final = 1 << 7
SERVER_STATUS_DB_DROPPED: Final = 1 << 8
SERVER_STATUS_NO_BACKSLASH_ESCAPES: Final = 1 << 9
SERVER_STATUS_METADATA_CHANGED: Final = 1 << 10
SERVER_QUERY_WAS_SLOW: Final = 1 << 11
SERVER_PS_OUT_PARAMS: Final = 1 << 12
SERVER_STATUS_IN_TRANS_READONLY: Final = 1 << 13
SERVER_SESSION_STATE_CHANGED: Final = 1 << 14
# The status flags that describe a session rather than one reply or transaction.
SESSION_STATUS: Final = SERVER_STATUS_AUTOCOMMIT | SERVER_STATUS_NO_BACKSLASH_ESCAPES
# The flags of an open transaction.
TRANSACTION_STATUS: Final = SERVER_STATUS_IN_TRANS | SERVER_STATUS_IN_TRANS_READONLY

# ---- commands (first byte of a command packet) -------------------------------

COM_SLEEP: Final = 0x00
COM_QUIT: Final = 0x01
COM_INIT_DB: Final = 0x02
COM_QUERY: Final = 0x03
COM_FIELD_LIST: Final = 0x04
COM_CREATE_DB: Final = 0x05
COM_DROP_DB: Final = 0x06
COM_REFRESH: Final = 0x07
COM_SHUTDOWN: Final = 0x08
COM_STATISTICS: Final = 0x09
COM_PROCESS_INFO: Final = 0x0A
COM_CONNECT: Final = 0x0B
COM_PROCESS_KILL: Final = 0x0C
COM_DEBUG: Final = 0x0D
COM_PING: Final = 0x0E
COM_TIME: Final = 0x0F
COM_DELAYED_INSERT: Final = 0x10
COM_CHANGE_USER: Final = 0x11
COM_BINLOG_DUMP: Final = 0x12
COM_TABLE_DUMP: Final = 0x13
COM_CONNECT_OUT: Final = 0x14
COM_REGISTER_SLAVE: Final = 0x15
COM_STMT_PREPARE: Final = 0x16
COM_STMT_EXECUTE: Final = 0x17
COM_STMT_SEND_LONG_DATA: Final = 0x18
COM_STMT_CLOSE: Final = 0x19
COM_STMT_RESET: Final = 0x1A
COM_SET_OPTION: Final = 0x1B
COM_STMT_FETCH: Final = 0x1C
COM_DAEMON: Final = 0x1D
COM_BINLOG_DUMP_GTID: Final = 0x1E
COM_RESET_CONNECTION: Final = 0x1F

# COM_SET_OPTION argument (int2)
MYSQL_OPTION_MULTI_STATEMENTS_ON: Final = 0
MYSQL_OPTION_MULTI_STATEMENTS_OFF: Final = 1

# COM_STMT_EXECUTE flags (int1)
CURSOR_TYPE_NO_CURSOR: Final = 0x00
CURSOR_TYPE_READ_ONLY: Final = 0x01
CURSOR_TYPE_FOR_UPDATE: Final = 0x02
CURSOR_TYPE_SCROLLABLE: Final = 0x04

# ---- first bytes of server packets -------------------------------------------

OK_HEADER: Final = 0x00
ERR_HEADER: Final = 0xFF
EOF_HEADER: Final = 0xFE  # also AuthSwitchRequest during authentication
LOCAL_INFILE_HEADER: Final = 0xFB
AUTH_MORE_DATA_HEADER: Final = 0x01
NULL_VALUE: Final = 0xFB  # a NULL column in a text row

MAX_PACKET_PAYLOAD: Final = 0xFFFFFF  # a physical packet; a full one continues in the next

# ---- character sets (the int1 collation id of the handshake) -----------------

UTF8MB4_GENERAL_CI: Final = 45  # MariaDB's and MySQL 5.7's utf8mb4 default
UTF8MB4_0900_AI_CI: Final = 255  # MySQL 8's default
BINARY: Final = 63

# ---- authentication plugins --------------------------------------------------

NATIVE_PASSWORD: Final = "mysql_native_password"
CACHING_SHA2_PASSWORD: Final = "caching_sha2_password"
CLEAR_PASSWORD: Final = "mysql_clear_password"

# ---- session state tracking (OK packets with CLIENT_SESSION_TRACK) -----------

SESSION_TRACK_SYSTEM_VARIABLES: Final = 0
SESSION_TRACK_SCHEMA: Final = 1
SESSION_TRACK_STATE_CHANGE: Final = 2
SESSION_TRACK_GTIDS: Final = 3
SESSION_TRACK_TRANSACTION_CHARACTERISTICS: Final = 4
SESSION_TRACK_TRANSACTION_STATE: Final = 5

# ---- errors Sluice raises itself: (error number, SQLSTATE) -------------------

ER_CON_COUNT_ERROR: Final = (1040, "08004")  # too many client connections
ER_HANDSHAKE_ERROR: Final = (1043, "08S01")  # malformed handshake
ER_DBACCESS_DENIED_ERROR: Final = (1044, "42000")
ER_ACCESS_DENIED_ERROR: Final = (1045, "28000")  # wrong password or unknown user
ER_HOST_IS_BLOCKED: Final = (1129, "HY000")  # too many failed logins from the client's host
ER_HOST_NOT_PRIVILEGED: Final = (1130, "HY000")  # the client's host may not connect
ER_UNKNOWN_COM_ERROR: Final = (1047, "08S01")  # a command the proxy does not relay
ER_BAD_DB_ERROR: Final = (1049, "42000")
ER_SERVER_SHUTDOWN: Final = (1053, "08S01")
ER_NO_SUCH_THREAD: Final = (1094, "HY000")  # KILL of a thread id the client does not own
ER_UNKNOWN_ERROR: Final = (1105, "HY000")
ER_NOT_ALLOWED_COMMAND: Final = (1148, "42000")  # LOAD DATA LOCAL refused
ER_NET_PACKET_TOO_LARGE: Final = (1153, "08S01")
ER_NET_PACKETS_OUT_OF_ORDER: Final = (1156, "08S01")  # a wrong sequence id during the login
ER_NET_READ_ERROR: Final = (1158, "08S01")
ER_NET_READ_INTERRUPTED: Final = (1159, "08S01")  # idle client timeout, idle transaction timeout
ER_WRONG_ARGUMENTS: Final = (1210, "HY000")  # a COM_STMT_EXECUTE whose parameters do not parse
ER_NOT_SUPPORTED_YET: Final = (1235, "42000")  # a read of results another connection holds
ER_UNKNOWN_STMT_HANDLER: Final = (1243, "HY000")
ER_NOT_SUPPORTED_AUTH_MODE: Final = (1251, "08004")
ER_NEED_REPREPARE: Final = (1615, "HY000")  # a statement whose settings changed since its PREPARE
ER_MALFORMED_PACKET: Final = (1835, "HY000")  # a command too short for its fixed fields
ER_QUERY_INTERRUPTED: Final = (1317, "70100")  # a waiting request cancelled by KILL QUERY
# A plaintext login when TLS is required. MySQL 5.7+ answers 3159/HY000; MariaDB
# 10.11 answers 1045/28000 (Access denied). Sluice uses MySQL's number, which
# drivers of both families report by name.
ER_SECURE_TRANSPORT_REQUIRED: Final = (3159, "HY000")
# No database connection could be borrowed in time. RDS Proxy reports this as
# 9501/HY000 ("Timed-out waiting to acquire database connection"); a number
# outside the server's own ranges, so nobody takes it for a server condition,
# and HY000 (not class 08), so drivers do not discard the client connection.
ER_BORROW_TIMEOUT: Final = (9501, "HY000")
