import Fuzzing

// libFuzzer target (scripts/fuzz.sh): FuzzEntry.suite in Sources/Fuzzing.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt { FuzzEntry.suite.libFuzzer(data, size) }
