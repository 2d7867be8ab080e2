#!/usr/bin/env bash
# The recipe's clean-up, in reverse: first what recipe.sh made (the proxy, its rules, group,
# policy and role), then what prerequisites.sh made (the function, its layer, role and
# group, the DB instance with its secret and data, the subnet group, the database's group),
# then $WORK_DIR. Reads the variables both scripts wrote to $WORK_DIR/recipe-vars.sh.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
. "$HERE/settings.sh"
. "$RECIPE_VARS"
progress() { echo "-- $*" >&2; }

if [ -n "${RDS_PROXY_SG_ID:-}" ]; then
	progress "the proxy $DB_NAME, its rules, security group, policy and role"
	aws rds delete-db-proxy --db-proxy-name $DB_NAME --endpoint-url $ENDPOINT_URL > /dev/null
	while aws rds describe-db-proxies --db-proxy-name $DB_NAME \
		--endpoint-url $ENDPOINT_URL > /dev/null 2>&1; do
		sleep 1
	done
	aws ec2 revoke-security-group-ingress \
		--protocol tcp --port $DB_PORT \
		--source-group $DB_APP_FUNCTION_SG_ID \
		--group-id $RDS_PROXY_SG_ID --endpoint-url $ENDPOINT_URL > /dev/null
	aws ec2 revoke-security-group-ingress \
		--protocol tcp --port $DB_PORT \
		--source-group $RDS_PROXY_SG_ID \
		--group-id $RDS_SG --endpoint-url $ENDPOINT_URL > /dev/null
	aws ec2 delete-security-group --group-id $RDS_PROXY_SG_ID --endpoint-url $ENDPOINT_URL > /dev/null
	aws iam detach-role-policy --role-name AWSCookbook403RDSProxy \
		--policy-arn arn:aws:iam::aws:policy/SecretsManagerReadWrite --endpoint-url $ENDPOINT_URL
	aws iam detach-role-policy --role-name $DB_APP_FUNCTION_ROLE_NAME \
		--policy-arn arn:aws:iam::$AWS_ACCOUNT_ID:policy/AWSCookbook403RdsIamPolicy \
		--endpoint-url $ENDPOINT_URL
	aws iam delete-policy \
		--policy-arn arn:aws:iam::$AWS_ACCOUNT_ID:policy/AWSCookbook403RdsIamPolicy \
		--endpoint-url $ENDPOINT_URL
	aws iam delete-role --role-name AWSCookbook403RDSProxy --endpoint-url $ENDPOINT_URL
fi

progress "the function $DB_APP_FUNCTION_NAME, its layer, role and security group"
aws lambda delete-function --function-name $DB_APP_FUNCTION_NAME --endpoint-url $ENDPOINT_URL > /dev/null
aws lambda delete-layer-version --layer-name ${LAYER_VERSION_ARN%:*} \
	--version-number ${LAYER_VERSION_ARN##*:} --endpoint-url $ENDPOINT_URL
aws iam detach-role-policy --role-name $DB_APP_FUNCTION_ROLE_NAME \
	--policy-arn arn:aws:iam::aws:policy/service-role/AWSLambdaVPCAccessExecutionRole \
	--endpoint-url $ENDPOINT_URL
aws iam delete-role --role-name $DB_APP_FUNCTION_ROLE_NAME --endpoint-url $ENDPOINT_URL
aws ec2 delete-security-group --group-id $DB_APP_FUNCTION_SG_ID --endpoint-url $ENDPOINT_URL > /dev/null

progress "the DB instance $RDS_ID (its server, data and secret) and its subnet group"
aws rds delete-db-instance --db-instance-identifier $RDS_ID --skip-final-snapshot \
	--endpoint-url $ENDPOINT_URL > /dev/null
progress "aws rds wait db-instance-deleted"
aws rds wait db-instance-deleted --db-instance-identifier $RDS_ID --endpoint-url $ENDPOINT_URL
aws rds delete-db-subnet-group --db-subnet-group-name $DB_SUBNET_GROUP \
	--endpoint-url $ENDPOINT_URL
aws ec2 delete-security-group --group-id $RDS_SG --endpoint-url $ENDPOINT_URL > /dev/null

rm -rf "$WORK_DIR"
echo "Everything the recipe and its prerequisites made is deleted."
