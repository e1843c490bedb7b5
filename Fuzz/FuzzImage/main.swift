import CFuzzerDriver
import Glibc

// libFuzzer drives fuzzImage(_:_:) with inputs; flags such as -max_total_time pass through.
var argc = CommandLine.argc
var argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>? = CommandLine.unsafeArgv
exit(LLVMFuzzerRunDriver(&argc, &argv) { data, size in fuzzImage(data, size) })
