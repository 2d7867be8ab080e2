#!/usr/bin/env bash
# The RDS Proxy recipe (AWS Cookbook 4.3), steps 1 to 9 and its check, command for command;
# only `--endpoint-url` is added, and the engine family and port come from the variant run
# (MYSQL / 3306 in the recipe; POSTGRESQL / 5432 for its PostgreSQL twin). The variables the
# recipe's earlier chapters made (VPC_ID, DB_NAME, RDS_SECRET_ARN, AWS_ACCOUNT_ID, AWS_REGION,
# ISTOLATED_SUBNETS, RDS_SG, RDS_ID, DB_APP_FUNCTION_ROLE_NAME, DB_APP_FUNCTION_SG_ID,
# DB_APP_FUNCTION_NAME) come from prerequisites.sh's $WORK_DIR/recipe-vars.sh, or from the
# environment. Without DB_APP_FUNCTION_NAME it stops after step 8 (a proxy with no function).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
. "$HERE/settings.sh"
if [ -f "$RECIPE_VARS" ]; then . "$RECIPE_VARS"; fi
mkdir -p "$WORK_DIR"
cp "$HERE/assume-role-policy.json" "$HERE/policy-template.json" "$WORK_DIR"/
cd "$WORK_DIR"

# 1
aws iam create-role --assume-role-policy-document \
	file://assume-role-policy.json --role-name AWSCookbook403RDSProxy --endpoint-url $ENDPOINT_URL

# 2
RDS_PROXY_SG_ID=$(aws ec2 create-security-group \
	--group-name AWSCookbook403RDSProxySG \
	--description "Lambda Security Group" --vpc-id $VPC_ID \
	--output text --query GroupId --endpoint-url $ENDPOINT_URL)

RDS_PROXY_ENDPOINT_ARN=$(aws rds create-db-proxy \
	--db-proxy-name $DB_NAME \
	--engine-family $ENGINE_FAMILY \
	--auth '{
				"AuthScheme": "SECRETS",
				"SecretArn": "'"$RDS_SECRET_ARN"'",
				"IAMAuth": "REQUIRED"
			}' \
	--role-arn arn:aws:iam::$AWS_ACCOUNT_ID:role/AWSCookbook403RDSProxy \
	--vpc-subnet-ids $ISTOLATED_SUBNETS \
	--vpc-security-group-ids $RDS_PROXY_SG_ID \
	--require-tls --output text \
	--query DBProxy.DBProxyArn --endpoint-url $ENDPOINT_URL)

for _ in $(seq 60); do
	STATUS=$(aws rds describe-db-proxies \
		--db-proxy-name $DB_NAME \
		--query DBProxies[0].Status \
		--output text --endpoint-url $ENDPOINT_URL)
	[ "$STATUS" = available ] && break
	sleep 1
done
[ "$STATUS" = available ]

RDS_PROXY_ENDPOINT=$(aws rds describe-db-proxies \
	--db-proxy-name $DB_NAME \
	--query DBProxies[0].Endpoint \
	--output text --endpoint-url $ENDPOINT_URL)

RDS_PROXY_ID=$(echo $RDS_PROXY_ENDPOINT_ARN | awk -F: '{ print $7 }')

# 3
sed -e "s/AWS_ACCOUNT_ID/${AWS_ACCOUNT_ID}/g" \
	-e "s|AWS_REGION|${AWS_REGION}|g" \
	-e "s|RDSProxyID|${RDS_PROXY_ID}|g" \
	policy-template.json > policy.json

aws iam create-policy --policy-name AWSCookbook403RdsIamPolicy \
	--policy-document file://policy.json --endpoint-url $ENDPOINT_URL

# 4
aws iam attach-role-policy --role-name $DB_APP_FUNCTION_ROLE_NAME \
	--policy-arn arn:aws:iam::$AWS_ACCOUNT_ID:policy/AWSCookbook403RdsIamPolicy \
	--endpoint-url $ENDPOINT_URL

aws rds describe-db-proxies --db-proxy-name $DB_NAME \
	--query DBProxies[0].Status \
	--output text --endpoint-url $ENDPOINT_URL

# 5
aws iam attach-role-policy --role-name AWSCookbook403RDSProxy \
	--policy-arn arn:aws:iam::aws:policy/SecretsManagerReadWrite --endpoint-url $ENDPOINT_URL

# 6
aws ec2 authorize-security-group-ingress \
	--protocol tcp --port $DB_PORT \
	--source-group $RDS_PROXY_SG_ID \
	--group-id $RDS_SG --endpoint-url $ENDPOINT_URL

# 7
aws rds register-db-proxy-targets \
	--db-proxy-name $DB_NAME \
	--db-instance-identifiers $RDS_ID --endpoint-url $ENDPOINT_URL

# 8
aws ec2 authorize-security-group-ingress \
	--protocol tcp --port $DB_PORT \
	--source-group $DB_APP_FUNCTION_SG_ID \
	--group-id $RDS_PROXY_SG_ID --endpoint-url $ENDPOINT_URL

# What cleanup.sh needs, and the proxy's endpoint for whoever runs this.
for name in RDS_PROXY_SG_ID RDS_PROXY_ENDPOINT RDS_PROXY_ID; do
	printf '%s=%q\n' $name "${!name}" >> "$RECIPE_VARS"
	echo "$name=${!name}"
done
[ -n "${DB_APP_FUNCTION_NAME:-}" ] || exit 0

# 9
aws lambda update-function-configuration \
	--function-name $DB_APP_FUNCTION_NAME \
	--environment Variables={DB_HOST=$RDS_PROXY_ENDPOINT} --endpoint-url $ENDPOINT_URL

# check
aws lambda invoke \
	--function-name $DB_APP_FUNCTION_NAME \
	response.json --endpoint-url $ENDPOINT_URL && cat response.json
