import ScoreboardCore
import Testing

struct CSVTests {
    @Test func plainFieldsAreWrittenAsTheyAreAndLinesEndWithCRLF() {
        #expect(CSV.line(["a", "b-c", "42"]) == "a,b-c,42\r\n")
    }

    @Test func absentValuesAreEmptyFields() {
        #expect(CSV.line(["a", nil, nil]) == "a,,\r\n")
    }

    /// Bad input tried: commas, double quotes, line feeds and carriage returns inside a field (a user-chosen guild
    /// name could hold any of them).
    @Test func fieldsWithSeparatorsQuotesOrLineEndsAreQuotedWithQuotesDoubled() {
        #expect(CSV.line(["a,b"]) == "\"a,b\"\r\n")
        #expect(CSV.line(["say \"hi\""]) == "\"say \"\"hi\"\"\"\r\n")
        #expect(CSV.line(["two\nlines", "cr\rhere"]) == "\"two\nlines\",\"cr\rhere\"\r\n")
        #expect(CSV.line(["", "é,ü"]) == ",\"é,ü\"\r\n")
    }
}
