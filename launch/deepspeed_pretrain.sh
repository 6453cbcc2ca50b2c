#!/usr/bin/env bash
# `dsdocre pretrain` under the deepspeed launcher; see launch/deepspeed_stage.sh for the environment.
exec "$(dirname "$0")/deepspeed_stage.sh" pretrain "$@"
