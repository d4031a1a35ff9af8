# Not a test: the router's added latency over 10k events and the
# supervisor's idle cost (BENCHMARKS.md); see input_bench.py.
. "$LAB_LIB"
. "$LAB_SCENARIO_DIR/input_env.sh"
lab_str cpu "$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2)"
lab_json bench "$(python3 "$LAB_SCENARIO_DIR/input_bench.py")"
