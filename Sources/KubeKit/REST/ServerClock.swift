import Foundation
import Synchronization

/// The API server's clock, as far as this client can tell: the `Date` header of its latest answer, carried forward
/// with this machine's monotonic clock. Times that another machine will compare (a session's Lease renewals, the age
/// of an object) are read and written in this clock only: laptops' clocks differ by minutes, and a comparison across
/// two of them once let one user's `clean` delete a colleague's live session (kt-connect #297, #299).
///
/// `Date` has whole seconds and is stamped before the answer travels, so a reading is the server's time within about
/// a second; every use of it here is about tens of seconds or more.
public final class ServerClock: Sendable {
    struct Reading {
        /// The header's time plus half a second (the middle of the second it names).
        var serverTime: Date
        var at: ContinuousClock.Instant
    }

    private let reading = Mutex<Reading?>(nil)

    public init() {}

    /// Notes a `Date` header received at `instant`; headers that do not parse are ignored.
    public func observe(dateHeader: String, at instant: ContinuousClock.Instant = .now) {
        guard let date = Self.parseHTTPDate(dateHeader) else { return }
        reading.withLock { $0 = Reading(serverTime: date.addingTimeInterval(0.5), at: instant) }
    }

    /// The server's time now, or nil when no answer has carried a `Date` header yet.
    public func now(at instant: ContinuousClock.Instant = .now) -> Date? {
        reading.withLock { reading in
            guard let reading else { return nil }
            let elapsed = instant - reading.at
            let seconds = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
            return reading.serverTime.addingTimeInterval(seconds)
        }
    }

    // MARK: - HTTP dates

    static let months = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]

    /// IMF-fixdate (RFC 9110 §5.6.7): `Sun, 06 Nov 1994 08:49:37 GMT`, the only form servers may send.
    public static func parseHTTPDate(_ text: String) -> Date? {
        let words = text.split(separator: " ")
        guard words.count == 6, words[0].hasSuffix(","), words[5] == "GMT",
            let day = Int(words[1]), (1...31).contains(day),
            let month = months.firstIndex(of: String(words[2])),
            let year = Int(words[3]), (1970...9999).contains(year)
        else { return nil }
        let clock = words[4].split(separator: ":")
        guard clock.count == 3, let hour = Int(clock[0]), let minute = Int(clock[1]), let second = Int(clock[2]),
            (0...23).contains(hour), (0...59).contains(minute), (0...60).contains(second)
        else { return nil }
        var components = DateComponents()
        components.calendar = Calendar(identifier: .gregorian)
        components.timeZone = TimeZone(identifier: "UTC")
        (components.year, components.month, components.day) = (year, month + 1, day)
        (components.hour, components.minute, components.second) = (hour, minute, second)
        return components.date
    }

    /// `date` as IMF-fixdate, for servers (ktlab) to send.
    public static func formatHTTPDate(_ date: Date) -> String {
        var calendar = Calendar(identifier: .gregorian)
        calendar.timeZone = TimeZone(identifier: "UTC")!
        let parts = calendar.dateComponents([.weekday, .year, .month, .day, .hour, .minute, .second], from: date)
        let weekdays = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"]
        func two(_ value: Int?) -> String { value.map { $0 < 10 ? "0\($0)" : "\($0)" } ?? "00" }
        return "\(weekdays[(parts.weekday ?? 1) - 1]), \(two(parts.day)) \(months[(parts.month ?? 1) - 1]) "
            + "\(parts.year ?? 1970) \(two(parts.hour)):\(two(parts.minute)):\(two(parts.second)) GMT"
    }
}

/// meta/v1 MicroTime: RFC 3339 with exactly six fractional digits, as Leases carry `renewTime`.
public enum MicroTime {
    public static func format(_ date: Date) -> String {
        let whole = floor(date.timeIntervalSince1970)
        let micros = min(999_999, Int(((date.timeIntervalSince1970 - whole) * 1e6).rounded(.down)))
        let base = RFC3339.format(Date(timeIntervalSince1970: whole))
        let fraction = String(micros)
        return base.dropLast() + "." + String(repeating: "0", count: 6 - fraction.count) + fraction + "Z"
    }

    /// MicroTime or plain RFC 3339 (up to nine fractional digits); nil for anything else. Strictly the RFC 3339
    /// form (a four-digit year): Foundation's parser also took `-026-12-04T…`, a year its formatter cannot write
    /// back (found by FuzzKube).
    public static func parse(_ text: String) -> Date? {
        guard
            text.range(
                of: #"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,9})?(Z|[+-][0-9]{2}:[0-9]{2})$"#,
                options: .regularExpression) != nil
        else { return nil }
        guard let dot = text.firstIndex(of: ".") else { return RFC3339.parse(text) }
        guard let zone = text[dot...].firstIndex(where: { $0 == "Z" || $0 == "+" || $0 == "-" }) else { return nil }
        let digits = text[text.index(after: dot)..<zone]
        guard !digits.isEmpty, digits.count <= 9, digits.allSatisfy(\.isASCII), let fraction = Int(digits),
            let base = RFC3339.parse(String(text[..<dot] + text[zone...]))
        else { return nil }
        return base.addingTimeInterval(Double(fraction) / pow(10, Double(digits.count)))
    }
}
