#!/usr/bin/env bash
# A long noninterference run: N generated statements (default 100000),
# each sent by a restricted role through pgwarden to two databases that
# differ only in what the role may not see, in both protocols; any
# difference in results, errors or row counts fails the run and is
# printed in full (the first ten).
#
#   N=100000 SEED=7 bench/noninterference.sh
set -euo pipefail
cd "$(dirname "$0")/.."
N=${N:-100000}
SEED=${SEED:-$(date +%s)}
NI_GENERATED=$N NI_SEED=$SEED cargo test --test noninterference \
  generated_statements_show_nothing_hidden -- --nocapture 2>&1 |
  sed -n '/^noninterference:/,$p'
