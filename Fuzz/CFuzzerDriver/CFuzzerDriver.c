// The declaration in include/CFuzzerDriver.h is all this target provides; the definition lives in libFuzzer.
