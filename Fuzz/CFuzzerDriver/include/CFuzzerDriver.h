#ifndef KT_CFUZZERDRIVER_H
#define KT_CFUZZERDRIVER_H

#include <stddef.h>
#include <stdint.h>

/// libFuzzer's documented entry for programs that keep their own main (see LLVM's LibFuzzer.rst,
/// "Using libFuzzer as a library"). Provided by the fuzzer runtime that -sanitize=fuzzer links.
int LLVMFuzzerRunDriver(int *argc, char ***argv, int (*callback)(const uint8_t *data, size_t size));

#endif
