//! The CDNOW purchase history (`shared/data/cdnow/README.md`): one order per
//! line, `customer_id YYYYMMDD number_of_cds dollar_value`, separated by runs
//! of spaces, after one header line.
//!
//! Each line becomes an order event whose id is the line number, because
//! identical lines are still distinct orders; importing the file again
//! changes nothing. A date-only time is 00:00 in the tenant's time zone.

use chrono::NaiveDate;
use chrono_tz::Tz;

use crate::proto::{self, event};
use crate::rule::values::parse_amount_cents;
use crate::time::start_of_date;

/// One order line of the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Order {
    /// The 1-based line number in the file (the header is line 1).
    pub line: u64,
    pub customer_id: String,
    pub date: NaiveDate,
    pub value_cents: i64,
}

/// Parses one line; `Ok(None)` for the header and blank lines.
pub fn parse_line(text: &str, line: u64) -> Result<Option<Order>, String> {
    let fields: Vec<&str> = text.split_whitespace().collect();
    if fields.is_empty() || (line == 1 && fields.first() == Some(&"customer_id")) {
        return Ok(None);
    }
    let [customer_id, date, _cds, dollars] = fields[..] else {
        return Err(format!("expected 4 columns, found {}", fields.len()));
    };
    let date = NaiveDate::parse_from_str(date, "%Y%m%d")
        .map_err(|_| format!("`{date}` is not a YYYYMMDD date"))?;
    let value_cents = parse_amount_cents(dollars)
        .and_then(|cents| i64::try_from(cents).ok())
        .ok_or_else(|| format!("`{dollars}` is not a dollar amount"))?;
    Ok(Some(Order {
        line,
        customer_id: customer_id.to_owned(),
        date,
        value_cents,
    }))
}

/// The order event of one line, dated at local midnight in the tenant's zone.
pub fn order_event(order: &Order, time_zone: Tz) -> proto::Event {
    let seconds = start_of_date(time_zone, order.date);
    proto::Event {
        event_id: format!("cdnow:{}", order.line),
        customer_id: order.customer_id.clone(),
        time: Some(prost_types::Timestamp { seconds, nanos: 0 }),
        kind: Some(event::Kind::Order(event::Order {
            value_cents: order.value_cents,
        })),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_with_leading_spaces_and_crlf_parses() {
        let order = parse_line(" 00002 19970112  5   77.00\r\n", 3)
            .unwrap()
            .unwrap();
        assert_eq!(order.customer_id, "00002");
        assert_eq!(order.date, NaiveDate::from_ymd_opt(1997, 1, 12).unwrap());
        assert_eq!(order.value_cents, 7700);
        assert_eq!(order.line, 3);
    }

    #[test]
    fn the_header_is_skipped_and_bad_lines_are_refused() {
        assert_eq!(
            parse_line(" customer_id  date number_of_cds  dollar_value\r\n", 1),
            Ok(None)
        );
        assert!(parse_line(" 00001 19970101 1", 2).is_err());
        assert!(parse_line(" 00001 19971301 1 1.00", 2).is_err());
        assert!(parse_line(" 00001 19970101 1 1.001", 2).is_err());
    }

    #[test]
    fn dollars_convert_to_exact_cents() {
        let cents =
            |text| parse_line(&format!(" 1 19970101 1 {text}"), 2).map(|o| o.unwrap().value_cents);
        assert_eq!(cents("11.77"), Ok(1177));
        assert_eq!(cents("0.00"), Ok(0));
        assert_eq!(cents("12"), Ok(1200));
        assert_eq!(cents("0.5"), Ok(50));
        assert!(cents("-1.00").is_err());
    }
}
