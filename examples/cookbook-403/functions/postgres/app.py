"""The recipe's function for PostgreSQL: reads a table through DB_HOST as `admin`, logged in
with an IAM authentication token over TLS. Its layer brings pg8000 and the CA file at
/opt/python."""

import os
import ssl

import boto3
import pg8000.native

DB_PORT = 5432
DB_USER = "admin"
CA_FILE = "/opt/python/ca.pem"


def lambda_handler(event, context):
    host = os.environ["DB_HOST"]
    region = os.environ["AWS_REGION"]
    rds = boto3.client("rds", region_name=region)
    token = rds.generate_db_auth_token(
        DBHostname=host, Port=DB_PORT, DBUsername=DB_USER, Region=region
    )
    conn = pg8000.native.Connection(
        DB_USER, host=host, port=DB_PORT, password=token, database="appdb",
        ssl_context=ssl.create_default_context(cafile=CA_FILE), timeout=5,
    )
    try:
        rows = conn.run("SELECT id, name FROM books ORDER BY id")
        books = [{"id": id_, "name": name} for id_, name in rows]
        ((user,),) = conn.run("SELECT current_user")
    finally:
        conn.close()
    return {"statusCode": 200, "host": host, "user": user, "books": books}
