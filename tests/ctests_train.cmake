# `keel train` / `keel generate` from the command line: every bad input is one
# clear error line and a non-zero exit; a short real run trains and samples.
set(_tf ${CMAKE_SOURCE_DIR}/tests/train/fixtures)
set(_tb ${CMAKE_CURRENT_BINARY_DIR}/train_cli)

# Usage: keel_train_cli_error(name regex args...): exit != 0, exactly one output
# line, and that line contains regex.
function(keel_train_cli_error name regex)
  add_test(NAME ${name}
           COMMAND sh -c "out=$(\"$0\" \"$@\" 2>&1); rc=$?; echo \"$out\"; [ $rc -ne 0 ] && \
[ $(printf '%s\\n' \"$out\" | wc -l) -eq 1 ] && printf '%s' \"$out\" | grep -q -- \"${regex}\""
                   $<TARGET_FILE:keel> ${ARGN})
  set_tests_properties(${name} PROPERTIES TIMEOUT 60 LABELS train)
endfunction()

keel_train_cli_error(train_cli_unknown_key "unknown_key.toml:3: unknown key 'train.lr_max'"
                     train --config ${_tf}/unknown_key.toml)
keel_train_cli_error(train_cli_wrong_type "wrong_type.toml:5: train.lr: expected a number, got a string"
                     train --config ${_tf}/wrong_type.toml)
keel_train_cli_error(train_cli_bad_enum "bad_enum.toml:2: train.backend: unknown value \\\"gpu\\\""
                     train --config ${_tf}/bad_enum.toml)
keel_train_cli_error(train_cli_missing_config "no_such_config.toml: cannot read config file"
                     train --config ${_tb}/no_such_config.toml)
keel_train_cli_error(train_cli_unknown_override "override 'train.stepz=5': unknown key 'train.stepz'"
                     train train.stepz=5)
keel_train_cli_error(train_cli_override_wrong_type "override 'train.steps=ten': train.steps: expected an integer"
                     train train.steps=ten)
keel_train_cli_error(train_cli_override_bad_value "train.batch_size: must be > 0, got 0"
                     train train.batch_size=0)
keel_train_cli_error(train_cli_missing_corpus "data.corpus: ${_tb}/no_such_corpus: no such file or directory"
                     train data.corpus=${_tb}/no_such_corpus)
keel_train_cli_error(generate_cli_missing_run "${_tb}/no_such_run: run directory not found"
                     generate --run ${_tb}/no_such_run --prompt hello)
# CMake drops empty arguments, so the empty prompt is written inside the script.
add_test(NAME generate_cli_empty_prompt
         COMMAND sh -c "out=$(\"$0\" generate --run \"$1\" --prompt '' 2>&1); rc=$?; echo \"$out\"; \
[ $rc -ne 0 ] && [ $(printf '%s\\n' \"$out\" | wc -l) -eq 1 ] && printf '%s' \"$out\" | grep -q -- '--prompt: the prompt is empty'"
                 $<TARGET_FILE:keel> ${_tb}/no_such_run)
set_tests_properties(generate_cli_empty_prompt PROPERTIES TIMEOUT 60 LABELS train)
keel_train_cli_error(generate_cli_bad_top_p "--top-p: must be in"
                     generate --run ${_tb}/no_such_run --prompt hi --top-p 1.5)

# A short real run on three speeches, then greedy sampling from it.
set(_sotu ${CMAKE_SOURCE_DIR}/third_party/sotu/data)
if(EXISTS ${_sotu}/1790_george_washington_n.txt)
  file(MAKE_DIRECTORY ${_tb}/corpus)
  foreach(f 1790_george_washington_n.txt 1791_george_washington_n.txt 1792_george_washington_n.txt
            1793_george_washington_n.txt)
    file(COPY ${_sotu}/${f} DESTINATION ${_tb}/corpus)
  endforeach()
  add_test(NAME train_cli_short_run
           COMMAND $<TARGET_FILE:keel> train --no-resume data.corpus=${_tb}/corpus data.vocab_size=384
                   data.val_fraction=0.25 data.cache_dir=${_tb}/cache model.n_layer=1 model.n_head=2
                   model.n_embd=64 model.max_seq_len=32 train.seq_len=32 train.batch_size=8 train.steps=200
                   train.warmup_steps=5 train.lr=3e-3 train.eval_every=50 train.eval_batches=2
                   train.peak_gflops=100 run.dir=${_tb}/run)
  set_tests_properties(train_cli_short_run PROPERTIES TIMEOUT 120 LABELS train FIXTURES_SETUP train_run
                       PASS_REGULAR_EXPRESSION "validation loss [0-9.]+ nats/token vs unigram entropy [0-9.]+ nats/token \\([0-9.]+ below\\)")
  # Greedy generation through the engine, checked token by token against the
  # training model's own forward pass (tests/scripts/generate_greedy_check.py).
  add_test(NAME generate_cli_greedy
           COMMAND /usr/bin/python3 ${CMAKE_SOURCE_DIR}/tests/scripts/generate_greedy_check.py
                   $<TARGET_FILE:keel> ${_tb}/run "The Congress" 16 ${_tb}/greedy_logits.json)
  set_tests_properties(generate_cli_greedy PROPERTIES TIMEOUT 60 LABELS train FIXTURES_REQUIRED train_run)
  # One metrics line per step; evaluated steps carry val_loss.
  add_test(NAME train_cli_metrics
           COMMAND sh -c "[ $(wc -l < \"$0\") -eq 200 ] && tail -n 1 \"$0\" | grep -q '\"step\":200,\"loss\":[0-9.]*,\"val_loss\":[0-9.]*,\"lr\":.*\"mfu\":.*\"peak_rss_mb\"' && grep -q '\"step\":50,.*val_loss' \"$0\""
                   ${_tb}/run/metrics.jsonl)
  set_tests_properties(train_cli_metrics PROPERTIES TIMEOUT 30 LABELS train FIXTURES_REQUIRED train_run)
  # A fresh start moves the old checkpoints aside to checkpoints.replaced-<second>;
  # with that name taken (another fresh start within the same second: here every
  # name of the next 30 seconds is taken) it must take another, not fail.
  add_test(NAME train_cli_fresh_start_name_taken
           COMMAND sh -c "set -e; d=$1; shift; rm -rf $d; \"$0\" \"$@\" run.dir=$d; now=$(date +%s); \
for t in $(seq $now $((now + 30))); do mkdir -p $d/checkpoints.replaced-$t/taken; done; \
\"$0\" \"$@\" run.dir=$d; ls -d $d/checkpoints.replaced-*-2/step-*; [ -d $d/checkpoints ]"
                   $<TARGET_FILE:keel> ${_tb}/fresh_twice train --no-resume data.corpus=${_tb}/corpus
                   data.vocab_size=384 data.val_fraction=0.25 data.cache_dir=${_tb}/cache_fresh
                   model.n_layer=1 model.n_head=2 model.n_embd=32 model.max_seq_len=32 train.seq_len=32
                   train.batch_size=4 train.steps=4 train.warmup_steps=1 train.eval_every=4
                   train.eval_batches=1 train.peak_gflops=100)
  set_tests_properties(train_cli_fresh_start_name_taken PROPERTIES TIMEOUT 120 LABELS train)
else()
  keel_missing_dependency(train_missing_dependency "${KEEL_SOTU_MISSING}")
endif()
