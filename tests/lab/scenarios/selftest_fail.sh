# The lab's own check: a scenario that fails must surface its output and log.
. "$LAB_LIB"
lab_str reached before-failure
echo "selftest: failing on purpose"
exit 3
