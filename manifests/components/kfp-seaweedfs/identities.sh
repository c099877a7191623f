#!/bin/sh
# Creates or updates codedpo's four identities on KFP's SeaweedFS, one per role, with the keys of
# manifests/base/credentials*.env (docs/kubeflow.md, "Credentials for the object store"):
#   codedpo-admin    credentials.env          makes the bucket and sets its policy (the bucket Job)
#   codedpo-steps    credentials-steps.env    the pipeline's steps
#   codedpo-movers   credentials-movers.env   the sandbox pods' fetch and upload containers
#   codedpo-trainer  credentials-trainer.env  the training job's pods
# A SeaweedFS identity scopes an action by bucket or by key prefix only (`Read:codedpo/runs/*`,
# a trailing `*`, no wildcard inside a key), so the movers and the trainer get `runs/*` here and
# the bucket policy (bucket-policy.json, set by the bucket Job) narrows them with Deny statements.
#
#   sh manifests/components/kfp-seaweedfs/identities.sh
# Environment: WEED_SHELL (default: weed shell in KFP's seaweedfs Deployment, through kubectl),
# CODEDPO_CREDENTIALS_DIR (default: manifests/base), CODEDPO_BUCKET (default: codedpo).
# The keys go to weed shell on its standard input, never on a command line.
set -eu
here="$(cd "$(dirname "$0")" && pwd)"
credentials="${CODEDPO_CREDENTIALS_DIR:-$here/../../base}"
bucket="${CODEDPO_BUCKET:-codedpo}"
weed_shell="${WEED_SHELL:-kubectl -n kubeflow exec -i deploy/seaweedfs -- weed shell}"

value() {  # value FILE NAME: the last NAME=... line of FILE
  sed -n "s/^$2=//p" "$1" | tail -n 1
}

configure() {  # configure USER FILE ACTIONS
  key="$(value "$2" AWS_ACCESS_KEY_ID)"
  secret="$(value "$2" AWS_SECRET_ACCESS_KEY)"
  case "$key$secret" in
    ''|*CHANGE-ME*) echo "$2: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY first" >&2; exit 1 ;;
  esac
  echo "s3.configure -user=$1 -access_key=$key -secret_key=$secret -actions=$3 -apply"
}

commands="$(
  configure codedpo-admin "$credentials/credentials.env" \
    "Admin:$bucket,Read:$bucket,Write:$bucket,List:$bucket,Tagging:$bucket"
  configure codedpo-steps "$credentials/credentials-steps.env" \
    "Read:$bucket,List:$bucket,Write:$bucket/runs/*,Write:$bucket/.codedpo-tmp/*"
  configure codedpo-movers "$credentials/credentials-movers.env" \
    "Read:$bucket/runs/*,Write:$bucket/runs/*,Read:$bucket/.codedpo-tmp/*,Write:$bucket/.codedpo-tmp/*"
  configure codedpo-trainer "$credentials/credentials-trainer.env" \
    "Read:$bucket/runs/*,Write:$bucket/runs/*,List:$bucket/runs/*"
)"
# weed shell echoes the whole configuration, every identity's secret key included: keep only errors.
output="$(printf '%s\n' "$commands" | $weed_shell 2>&1)"
case "$output" in
  *rror*) printf '%s\n' "$output" | sed -n '/rror/p' >&2; exit 1 ;;
esac
echo "configured codedpo-admin, codedpo-steps, codedpo-movers, codedpo-trainer on bucket $bucket"
