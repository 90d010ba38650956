# `keel plan`: the goodput model on a stated cluster (Llama 3's published
# failure rate at 16k chips), --simulate beside it, --from-run on the report
# fixture's run with a crash in its events, and bad input named.
set(_pl ${CMAKE_CURRENT_BINARY_DIR}/plan_cli)
file(MAKE_DIRECTORY ${_pl})
set(_ex ${CMAKE_SOURCE_DIR}/tests/scripts/expect_run.sh)
add_test(NAME plan_cluster_simulated
         COMMAND ${_ex} 0 "simulation \\(100 runs of 20000 steps, seed 1\\): goodput mean 0\\.[0-9]+"
                 $<TARGET_FILE:keel> plan --chips 16384 --mtbf-hours 50680 --step-s 4 --restart-s 300
                 --checkpoint-s 60 --snapshot-s 0.5 --steps 20000 --simulate --runs 100)
add_test(NAME plan_from_run
         COMMAND ${_ex} 0 "from .*run_faulty: [0-9]+ steps of mean [0-9.]+ s, 1 chip\\(s\\), 1 fault\\(s\\)"
                 $<TARGET_FILE:keel> plan --from-run ${CMAKE_CURRENT_BINARY_DIR}/report_cli/run_faulty
                 --checkpoint-s 0.5)
set_tests_properties(plan_from_run PROPERTIES FIXTURES_REQUIRED report_faulty)
add_test(NAME plan_needs_failure_rate
         COMMAND ${_ex} 1 "--mtbf-hours or --failure-log is required"
                 $<TARGET_FILE:keel> plan --step-s 1 --restart-s 10 --checkpoint-s 1)
add_test(NAME plan_bad_value
         COMMAND ${_ex} 1 "chips must be >= 1, got 0"
                 $<TARGET_FILE:keel> plan --chips 0 --mtbf-hours 100 --step-s 1 --restart-s 10
                 --checkpoint-s 1)
file(WRITE ${_pl}/bad_log.txt "# hours since the start\n1.5\n0.5\n")
add_test(NAME plan_bad_failure_log
         COMMAND ${_ex} 1 "bad_log.txt:3: failure times must be ascending"
                 $<TARGET_FILE:keel> plan --chips 8 --failure-log ${_pl}/bad_log.txt --step-s 1
                 --restart-s 10 --checkpoint-s 1)
file(WRITE ${_pl}/log.txt "# hours since the start\n10\n25\n40\n")
add_test(NAME plan_failure_log
         COMMAND ${_ex} 0 "8 chip\\(s\\), MTBF 4\\.4 days per chip"
                 $<TARGET_FILE:keel> plan --chips 8 --failure-log ${_pl}/log.txt --step-s 1
                 --restart-s 10 --checkpoint-s 1)
set_tests_properties(plan_cluster_simulated plan_from_run plan_needs_failure_rate plan_bad_value
                     plan_bad_failure_log plan_failure_log PROPERTIES TIMEOUT 60 LABELS "plan;resilience")
