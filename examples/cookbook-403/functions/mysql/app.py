"""The recipe's function: reads a table through DB_HOST as `admin`, logged in with an IAM
authentication token over TLS. Its layer brings pymysql and the CA file at /opt/python."""

import os

import boto3
import pymysql

DB_PORT = 3306
DB_USER = "admin"
CA_FILE = "/opt/python/ca.pem"


def lambda_handler(event, context):
    host = os.environ["DB_HOST"]
    region = os.environ["AWS_REGION"]
    rds = boto3.client("rds", region_name=region)
    token = rds.generate_db_auth_token(
        DBHostname=host, Port=DB_PORT, DBUsername=DB_USER, Region=region
    )
    # autocommit: each statement is its own transaction, so the proxy lends a database
    # connection for one statement at a time (a transaction left open would hold one until
    # the function disconnects, and the proxy would then close it)
    conn = pymysql.connect(
        host=host, port=DB_PORT, user=DB_USER, password=token, database="appdb",
        ssl={"ca": CA_FILE}, connect_timeout=5, autocommit=True,
    )
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT id, name FROM books ORDER BY id")
            books = [{"id": id_, "name": name} for id_, name in cur.fetchall()]
            cur.execute("SELECT CURRENT_USER()")
            (user,) = cur.fetchone()
    finally:
        conn.close()
    return {"statusCode": 200, "host": host, "user": user, "books": books}
