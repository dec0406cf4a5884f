import NIOCore
import ScoreboardCore

/// The bytes of one update on both transports, encoded at most once and shared by every subscriber it goes to:
/// one SSE event (`id`, `event`, `data`, blank line) whose `data` line is the JSON object a WebSocket client gets as
/// a text message (a slice of the same storage, no copy).
public struct EncodedFrame: Sendable {
    /// The whole SSE event.
    public let sse: ByteBuffer
    /// The JSON object alone: what a WebSocket text message carries.
    public let json: ByteBuffer
}

/// The JSON of stream frames, written by hand: an update frame is encoded once per update, but with thousands of
/// subscribers and a busy board that is still the feed's hottest path, and Foundation's encoder costs several times
/// more. Keys are sorted, as the encoder with `.sortedKeys` wrote them before.
enum FrameEncoding {
    static func encode(_ update: SequencedUpdate) -> EncodedFrame {
        let changes = update.changes
        var buffer = ByteBuffer()
        buffer.reserveCapacity(160 + 64 * changes.members.count)
        buffer.writeString("id: \(update.sequence)\nevent: update\ndata: ")
        let jsonStart = buffer.writerIndex
        buffer.writeString("{\"sequence\":\(update.sequence),\"stream\":")
        writeJSONString(changes.streamID, to: &buffer)
        buffer.writeString(",\"type\":\"update\",\"update\":{\"board\":")
        writeJSONString(changes.board, to: &buffer)
        buffer.writeString(",\"dimension\":")
        writeJSONString(changes.dimension.rawValue, to: &buffer)
        if let value = changes.dimensionValue {
            buffer.writeString(",\"dimensionValue\":")
            writeJSONString(value, to: &buffer)
        }
        buffer.writeString(",\"members\":[")
        for (index, member) in changes.members.enumerated() {
            buffer.writeString(index == 0 ? "{" : ",{")
            if let rank = member.rank { buffer.writeString("\"rank\":\(rank),") }
            if member.isRemoved { buffer.writeString("\"removed\":true,") }
            buffer.writeString("\"total\":\(member.total),\"userId\":")
            writeJSONString(member.userID, to: &buffer)
            buffer.writeString("}")
        }
        buffer.writeString("],\"period\":")
        writeJSONString(changes.period, to: &buffer)
        buffer.writeString(",\"window\":")
        writeJSONString(changes.window.rawValue, to: &buffer)
        buffer.writeString("}}")
        let jsonLength = buffer.writerIndex - jsonStart
        buffer.writeString("\n\n")
        // Sliced once the buffer is complete: a slice taken before a write would make that write copy the storage.
        return EncodedFrame(sse: buffer, json: buffer.getSlice(at: jsonStart, length: jsonLength)!)
    }

    /// `text` as a JSON string: quotes, backslashes and control characters escaped (`/` left alone).
    static func writeJSONString(_ text: String, to buffer: inout ByteBuffer) {
        buffer.writeInteger(UInt8(ascii: "\""))
        defer { buffer.writeInteger(UInt8(ascii: "\"")) }
        // Ids are validated identifiers: almost always nothing to escape.
        if text.utf8.allSatisfy({ $0 >= 0x20 && $0 != UInt8(ascii: "\"") && $0 != UInt8(ascii: "\\") }) {
            buffer.writeString(text)
            return
        }
        let hex = Array("0123456789abcdef".utf8)
        for byte in text.utf8 {
            switch byte {
            case UInt8(ascii: "\""): buffer.writeStaticString("\\\"")
            case UInt8(ascii: "\\"): buffer.writeStaticString("\\\\")
            case 0x0A: buffer.writeStaticString("\\n")
            case 0x0D: buffer.writeStaticString("\\r")
            case 0x09: buffer.writeStaticString("\\t")
            case 0..<0x20: buffer.writeBytes([UInt8(ascii: "\\"), UInt8(ascii: "u"), 0x30, 0x30, hex[Int(byte >> 4)], hex[Int(byte & 0xF)]])
            default: buffer.writeInteger(byte)
            }
        }
    }
}
