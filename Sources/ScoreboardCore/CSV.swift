/// Comma-separated values as RFC 4180 writes them, for exports a warehouse loads: a field that holds a comma, a
/// double quote, a carriage return or a line feed is quoted, with its double quotes doubled; an absent value is an
/// empty field. Lines end with CRLF, as the RFC says.
public enum CSV {
    public static func line(_ fields: [String?]) -> String {
        fields.map { field(for: $0) }.joined(separator: ",") + "\r\n"
    }

    static func field(for value: String?) -> String {
        guard let value else { return "" }
        let needsQuotes = value.utf8.contains { $0 == UInt8(ascii: ",") || $0 == UInt8(ascii: "\"") || $0 == 0x0A || $0 == 0x0D }
        guard needsQuotes else { return value }
        var quoted = "\""
        for character in value {
            if character == "\"" { quoted.append("\"") }
            quoted.append(character)
        }
        return quoted + "\""
    }
}
