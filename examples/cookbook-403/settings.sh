# Sourced by prerequisites.sh, recipe.sh and cleanup.sh: where `sluice server` is and which
# variant runs. Every value can be set in the environment first.
#   ENDPOINT_URL     the server's API (its default address unless told)
#   SLUICE_DATA_DIR  the server's data directory: its admin profile and the CA of the endpoints
#   ENGINE           mysql (the recipe) or postgres (its PostgreSQL twin)
#   WORK_DIR         the files the scripts make and the variables they hand on
export ENDPOINT_URL=${ENDPOINT_URL:-http://127.0.0.1:4510}
SLUICE_DATA_DIR=${SLUICE_DATA_DIR:-${XDG_DATA_HOME:-$HOME/.local/share}/sluice}
export AWS_CONFIG_FILE=${AWS_CONFIG_FILE:-$SLUICE_DATA_DIR/aws/config}
export AWS_PAGER=""
ENGINE=${ENGINE:-mysql}
WORK_DIR=${WORK_DIR:-$PWD/cookbook-403-$ENGINE}
RECIPE_VARS=$WORK_DIR/recipe-vars.sh
case $ENGINE in
	mysql) : "${ENGINE_FAMILY:=MYSQL}" "${DB_PORT:=3306}" ;;
	postgres) : "${ENGINE_FAMILY:=POSTGRESQL}" "${DB_PORT:=5432}" ;;
	*) echo "ENGINE must be mysql or postgres, not $ENGINE" >&2; exit 2 ;;
esac
