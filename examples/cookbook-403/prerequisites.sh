#!/usr/bin/env bash
# What the recipe's stack makes before its step 1, with the aws CLI against `sluice server`:
# the network (the server's VPC and subnets), a DB subnet group, the database's security
# group, the database (a real MariaDB or PostgreSQL server) with its master password in a
# secret it manages, a table with a few rows, and the function: its role, its security
# group, a layer with the database driver and the endpoints' CA file, its code. The
# variables recipe.sh and cleanup.sh need are written to $WORK_DIR/recipe-vars.sh.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
. "$HERE/settings.sh"
PYTHON=${PYTHON:-python3}
mkdir -p "$WORK_DIR"
cd "$WORK_DIR"
: > "$RECIPE_VARS"
keep() { # NAME...: hand these variables on to recipe.sh and cleanup.sh
	for name in "$@"; do printf '%s=%q\n' "$name" "${!name}" >> "$RECIPE_VARS"; done
}
progress() { echo "-- $*" >&2; }

if [ "$ENGINE" = mysql ]; then
	RDS_ID=awscookbook403db DB_DRIVER=pymysql
else
	RDS_ID=awscookbook403pg DB_DRIVER=pg8000
fi
DB_NAME=$RDS_ID # the recipe names the proxy after the database
DB_APP_FUNCTION_NAME=AWSCookbook403DBAppFunction
DB_APP_FUNCTION_ROLE_NAME=AWSCookbook403DBAppFunctionRole
keep ENGINE ENGINE_FAMILY DB_PORT RDS_ID DB_NAME DB_APP_FUNCTION_NAME DB_APP_FUNCTION_ROLE_NAME

AWS_ACCOUNT_ID=$(aws sts get-caller-identity --query Account --output text \
	--endpoint-url $ENDPOINT_URL)
AWS_REGION=$(aws configure get region)
keep AWS_ACCOUNT_ID AWS_REGION

# The network: sluice server's VPC and its subnets (addresses on this machine's loopback).
VPC_ID=$(aws ec2 describe-vpcs --query 'Vpcs[0].VpcId' --output text \
	--endpoint-url $ENDPOINT_URL)
ISTOLATED_SUBNETS=$(aws ec2 describe-subnets --filters Name=vpc-id,Values=$VPC_ID \
	--query 'Subnets[].SubnetId' --output text --endpoint-url $ENDPOINT_URL)
keep VPC_ID ISTOLATED_SUBNETS

progress "the $ENGINE DB instance $RDS_ID: its subnet group, security group and managed secret"
DB_SUBNET_GROUP=awscookbook403-isolated
aws rds create-db-subnet-group --db-subnet-group-name $DB_SUBNET_GROUP \
	--db-subnet-group-description "AWS Cookbook 403 isolated subnets" \
	--subnet-ids $ISTOLATED_SUBNETS --endpoint-url $ENDPOINT_URL > /dev/null
keep DB_SUBNET_GROUP
RDS_SG=$(aws ec2 create-security-group --group-name AWSCookbook403RDSSG \
	--description "Database Security Group" --vpc-id $VPC_ID \
	--output text --query GroupId --endpoint-url $ENDPOINT_URL)
keep RDS_SG

aws rds create-db-instance --db-instance-identifier $RDS_ID --engine $ENGINE \
	--db-instance-class db.t3.micro --allocated-storage 20 --db-name appdb \
	--master-username admin --manage-master-user-password \
	--enable-iam-database-authentication --no-publicly-accessible \
	--vpc-security-group-ids $RDS_SG --db-subnet-group-name $DB_SUBNET_GROUP \
	--endpoint-url $ENDPOINT_URL > /dev/null
progress "aws rds wait db-instance-available"
aws rds wait db-instance-available --db-instance-identifier $RDS_ID \
	--endpoint-url $ENDPOINT_URL
RDS_SECRET_ARN=$(aws rds describe-db-instances --db-instance-identifier $RDS_ID \
	--query 'DBInstances[0].MasterUserSecret.SecretArn' --output text \
	--endpoint-url $ENDPOINT_URL)
RDS_ENDPOINT=$(aws rds describe-db-instances --db-instance-identifier $RDS_ID \
	--query 'DBInstances[0].Endpoint.Address' --output text --endpoint-url $ENDPOINT_URL)
keep RDS_SECRET_ARN RDS_ENDPOINT

progress "a table with a few rows, written through $RDS_ENDPOINT with the secret's password"
# The database's group admits this machine's own address only while the rows are written
# (as a bastion host would be let in); afterwards only step 6's rule lets anything in.
aws ec2 authorize-security-group-ingress --group-id $RDS_SG --protocol tcp \
	--port $DB_PORT --cidr 127.0.0.1/32 --endpoint-url $ENDPOINT_URL > /dev/null
DB_PASSWORD=$(aws secretsmanager get-secret-value --secret-id $RDS_SECRET_ARN \
	--query SecretString --output text --endpoint-url $ENDPOINT_URL |
	$PYTHON -c 'import json, sys; print(json.load(sys.stdin)["password"])')
ROWS="CREATE TABLE books (id INT PRIMARY KEY, name VARCHAR(100) NOT NULL);
INSERT INTO books VALUES (1, 'AWS Cookbook'), (2, 'Serverless Patterns'), (3, 'Connection Pooling');"
if [ "$ENGINE" = mysql ]; then
	MYSQL_CLIENT=$(command -v mariadb || command -v mysql)
	MYSQL_PWD=$DB_PASSWORD $MYSQL_CLIENT --host=$RDS_ENDPOINT --port=$DB_PORT \
		--user=admin appdb <<< "$ROWS"
else
	PGPASSWORD=$DB_PASSWORD psql -q -v ON_ERROR_STOP=1 \
		"host=$RDS_ENDPOINT port=$DB_PORT user=admin dbname=appdb" <<< "$ROWS"
fi
unset DB_PASSWORD
aws ec2 revoke-security-group-ingress --group-id $RDS_SG --protocol tcp \
	--port $DB_PORT --cidr 127.0.0.1/32 --endpoint-url $ENDPOINT_URL > /dev/null

progress "the function $DB_APP_FUNCTION_NAME with its role, security group and $DB_DRIVER layer"
aws iam create-role --role-name $DB_APP_FUNCTION_ROLE_NAME \
	--assume-role-policy-document file://$HERE/function-trust-policy.json \
	--endpoint-url $ENDPOINT_URL > /dev/null
aws iam attach-role-policy --role-name $DB_APP_FUNCTION_ROLE_NAME \
	--policy-arn arn:aws:iam::aws:policy/service-role/AWSLambdaVPCAccessExecutionRole \
	--endpoint-url $ENDPOINT_URL
DB_APP_FUNCTION_SG_ID=$(aws ec2 create-security-group \
	--group-name AWSCookbook403FunctionSG --description "Lambda Security Group" \
	--vpc-id $VPC_ID --output text --query GroupId --endpoint-url $ENDPOINT_URL)
keep DB_APP_FUNCTION_SG_ID

# The layer: the database driver (pip install --target python/) and the endpoints' CA file.
rm -rf layer && mkdir -p layer/python
$PYTHON -m pip install --quiet --disable-pip-version-check --no-warn-conflicts --target layer/python $DB_DRIVER
cp "$SLUICE_DATA_DIR/tls/ca.pem" layer/python/ca.pem
(cd layer && $PYTHON -m zipfile -c ../layer.zip python)
LAYER_VERSION_ARN=$(aws lambda publish-layer-version --layer-name AWSCookbook403$DB_DRIVER \
	--zip-file fileb://layer.zip --compatible-runtimes python3.11 \
	--query LayerVersionArn --output text --endpoint-url $ENDPOINT_URL)
keep LAYER_VERSION_ARN

# The function, in its security group and the isolated subnets.
rm -rf function && mkdir function && cp "$HERE/functions/$ENGINE/app.py" function/
(cd function && $PYTHON -m zipfile -c ../function.zip app.py)
aws lambda create-function --function-name $DB_APP_FUNCTION_NAME \
	--runtime python3.11 --handler app.lambda_handler --timeout 30 \
	--role arn:aws:iam::$AWS_ACCOUNT_ID:role/$DB_APP_FUNCTION_ROLE_NAME \
	--zip-file fileb://function.zip --layers $LAYER_VERSION_ARN \
	--vpc-config SubnetIds=$(echo $ISTOLATED_SUBNETS | tr ' ' ','),SecurityGroupIds=$DB_APP_FUNCTION_SG_ID \
	--environment Variables={DB_HOST=$RDS_ENDPOINT} \
	--endpoint-url $ENDPOINT_URL > /dev/null
aws lambda wait function-active --function-name $DB_APP_FUNCTION_NAME \
	--endpoint-url $ENDPOINT_URL

echo "Prerequisites made; their variables are in $RECIPE_VARS. Next: bash $HERE/recipe.sh"
