# `nac bench --stage pretrain` under mpirun -np 2 (CTest: test_dist_bench_mpi, registered
# with the MPI launcher in CMakeLists.txt): exactly one line on stdout (rank 0's JSON), with
# "ranks": 2, positive rates, images_per_s the job's = 2 x images_per_s_per_rank (to the
# printed two decimals), batch and images_per_step the global ones.
# Variables: NAC (the nac executable), LAUNCH (the launcher and its flags, a list).
execute_process(
  COMMAND ${LAUNCH} ${NAC} bench --stage pretrain --width 0.0625 --batch 16 --steps 2
          --warmup 1 --threads 1 --peak-seconds 0 --loader-workers 0
  OUTPUT_VARIABLE out ERROR_VARIABLE err RESULT_VARIABLE rc)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "nac bench under mpirun exited ${rc}:\n${out}\n${err}")
endif()
string(STRIP "${out}" line)
if(line MATCHES "\n")
  message(FATAL_ERROR "more than one line on stdout (only rank 0 prints):\n${out}")
endif()
string(JSON stage ERROR_VARIABLE jerr GET "${line}" stage)
if(jerr OR NOT stage STREQUAL "pretrain")
  message(FATAL_ERROR "not one JSON object of the pretrain stage (${jerr}):\n${out}")
endif()
# the numbers as printed (string(JSON) would reformat them as doubles)
foreach(key ranks batch images_per_step images_per_s images_per_s_per_rank step_s)
  if(NOT line MATCHES "\"${key}\":([-0-9.e+]+)")
    message(FATAL_ERROR "no number \"${key}\" in the line\n${line}")
  endif()
  set(${key} "${CMAKE_MATCH_1}")
endforeach()
if(NOT ranks EQUAL 2 OR NOT batch EQUAL 16 OR NOT images_per_step EQUAL 32)
  message(FATAL_ERROR "ranks ${ranks}, batch ${batch}, images_per_step ${images_per_step}: "
                      "want 2, 16, 32\n${line}")
endif()
# the rates in hundredths (printed with two decimals): job = 2 x a rank, > 0
foreach(v images_per_s images_per_s_per_rank)
  if(NOT ${v} MATCHES "^[0-9]+\\.[0-9][0-9]$")
    message(FATAL_ERROR "${v} = ${${v}} is not a rate with two decimals\n${line}")
  endif()
  string(REPLACE "." "" ${v}_c "${${v}}")
  math(EXPR ${v}_c "${${v}_c} + 0")
endforeach()
math(EXPR diff "${images_per_s_c} - 2 * ${images_per_s_per_rank_c}")
if(images_per_s_per_rank_c LESS_EQUAL 0 OR diff GREATER 2 OR diff LESS -2)
  message(FATAL_ERROR "images_per_s ${images_per_s} is not 2 x images_per_s_per_rank "
                      "${images_per_s_per_rank} (or not positive)\n${line}")
endif()
if(NOT step_s GREATER 0)
  message(FATAL_ERROR "step_s ${step_s} is not positive\n${line}")
endif()
message(STATUS "ok: ${line}")
