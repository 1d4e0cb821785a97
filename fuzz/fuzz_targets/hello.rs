#![no_main]
// The checks live in arqonbus::fuzzing, shared with tests/fuzz_targets_replay.rs.
libfuzzer_sys::fuzz_target!(|data: &[u8]| arqonbus::fuzzing::hello(data));
