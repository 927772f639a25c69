import Fuzzing

// libFuzzer target (scripts/fuzz.sh): FuzzEntry.npy in Sources/Fuzzing.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt { FuzzEntry.npy.libFuzzer(data, size) }
