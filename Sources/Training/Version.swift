// sambench's version string.
public enum SambenchVersion {
    public static let string = "0.1.0"
}
