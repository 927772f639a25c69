import Fuzzing

// libFuzzer target (scripts/fuzz.sh): FuzzEntry.cifar in Sources/Fuzzing.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt { FuzzEntry.cifar.libFuzzer(data, size) }
