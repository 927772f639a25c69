import Fuzzing

// libFuzzer target (scripts/fuzz.sh): FuzzEntry.safetensors in Sources/Fuzzing.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt { FuzzEntry.safetensors.libFuzzer(data, size) }
