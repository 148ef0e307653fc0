//! Shopify's customer export CSV, in its current header set (`Customer ID`,
//! `Default Address Province Code`, `Accepts SMS Marketing`, ...) and its
//! older one (`Province Code`, `Accepts Marketing`, no id), columns in any
//! order, optional ones absent.
//!
//! - The id is `Customer ID`; without one, the e-mail (lower-case), else
//!   the phone's digits.
//! - The province becomes the state for US addresses only; an address in
//!   another country clears the state; no country leaves it as it was.
//! - `Accepts SMS Marketing` (older files: `Accepts Marketing`) sets consent;
//!   `Total Spent` the lifetime spend; an empty cell leaves either as it was.
//! - `Tags` replace the customer's tags (an empty cell clears them).

use super::csvfile::{Columns, cell, check_id, fallback_id, require_any};
use crate::proto::Customer;
use crate::rule::values::{normalize_state, parse_amount_cents};

/// Where each field is in one file.
pub struct Layout {
    id: Option<usize>,
    email: Option<usize>,
    phone: Option<usize>,
    address_phone: Option<usize>,
    province: Option<usize>,
    country: Option<usize>,
    consent: Option<usize>,
    total_spent: Option<usize>,
    tags: Option<usize>,
}

impl Layout {
    /// Finds the columns; a file with no way to name a customer is refused.
    pub fn new(headers: &csv::StringRecord) -> Result<Self, String> {
        let columns = Columns::new(headers);
        let layout = Layout {
            id: columns.find(&["customer id", "id"]),
            email: columns.find(&["email"]),
            phone: columns.find(&["phone"]),
            address_phone: columns.find(&["default address phone"]),
            province: columns.find(&["default address province code", "province code"]),
            country: columns.find(&["default address country code", "country code"]),
            consent: columns.find(&["accepts sms marketing", "accepts marketing"]),
            total_spent: columns.find(&["total spent"]),
            tags: columns.find(&["tags"]),
        };
        require_any(
            &[layout.id, layout.email, layout.phone],
            "`Customer ID`, `Email` or `Phone`",
            "Shopify customer export",
        )?;
        Ok(layout)
    }

    /// One row as a customer update.
    pub fn customer(&self, row: &csv::StringRecord) -> Result<Customer, String> {
        let email = cell(row, self.email);
        let phone = cell(row, self.phone).or_else(|| cell(row, self.address_phone));
        let customer_id = cell(row, self.id)
            .or_else(|| fallback_id(email.as_deref(), phone.as_deref()))
            .ok_or("no customer id, e-mail or phone")?;
        check_id(&customer_id, "the customer id")?;
        for (value, column) in [(&email, "the e-mail"), (&phone, "the phone")] {
            value
                .as_deref()
                .map_or(Ok(()), |value| check_id(value, column))?;
        }

        let country = cell(row, self.country).map(|code| code.to_uppercase());
        let state = match (cell(row, self.province), country.as_deref()) {
            (Some(province), Some("US")) => Some(
                normalize_state(&province)
                    .ok_or_else(|| {
                        format!("province code `{province}` is not a US state or territory")
                    })?
                    .to_owned(),
            ),
            (None, Some("US")) | (_, None) => None,
            // An empty state clears it: the customer lives outside the US now.
            (_, Some(_)) => Some(String::new()),
        };
        let opted_in = cell(row, self.consent)
            .map(|text| match text.to_lowercase().as_str() {
                "yes" | "true" | "1" => Ok(true),
                "no" | "false" | "0" => Ok(false),
                _ => Err(format!(
                    "SMS consent `{text}` is not yes, no, true or false"
                )),
            })
            .transpose()?;
        let lifetime_spend_cents = cell(row, self.total_spent)
            .map(|text| {
                parse_amount_cents(text.trim_start_matches('$'))
                    .and_then(|cents| i64::try_from(cents).ok())
                    .ok_or_else(|| format!("Total Spent `{text}` is not an amount"))
            })
            .transpose()?;
        let tags: Vec<String> = cell(row, self.tags)
            .map(|text| {
                text.split(',')
                    .map(str::trim)
                    .filter(|tag| !tag.is_empty())
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default();
        Ok(Customer {
            customer_id,
            email,
            phone,
            state,
            tags,
            replace_tags: self.tags.is_some(),
            opted_in,
            lifetime_spend_cents,
            ..Customer::default()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(text: &str) -> Vec<Result<Customer, String>> {
        let mut reader = csv::Reader::from_reader(text.as_bytes());
        let layout = Layout::new(reader.headers().unwrap()).unwrap();
        reader
            .records()
            .map(|row| layout.customer(&row.unwrap()))
            .collect()
    }

    #[test]
    fn current_headers_with_apostrophes_and_quoted_tags() {
        let text = "\u{feff}Customer ID,Email,Phone,Default Address Province Code,\
                    Default Address Country Code,Accepts SMS Marketing,Total Spent,Tags\n\
                    '7001,Ann@Example.com,'+15555550100,ca,US,yes,120.50,\"vip, gift\"\n\
                    '7002,,,ON,CA,no,,\n";
        let rows = rows(text);
        let ann = rows[0].as_ref().unwrap();
        assert_eq!(ann.customer_id, "7001");
        assert_eq!(ann.phone.as_deref(), Some("+15555550100"));
        assert_eq!(ann.state.as_deref(), Some("CA"));
        assert_eq!(ann.opted_in, Some(true));
        assert_eq!(ann.lifetime_spend_cents, Some(12_050));
        assert_eq!(ann.tags, ["vip", "gift"]);
        let other = rows[1].as_ref().unwrap();
        assert_eq!(
            other.state.as_deref(),
            Some(""),
            "a Canadian address clears the state"
        );
        assert_eq!(other.lifetime_spend_cents, None);
        assert!(other.tags.is_empty() && other.replace_tags);
    }

    #[test]
    fn older_headers_name_customers_by_email() {
        let text = "First Name,Email,Province Code,Country Code,Accepts Marketing,Total Spent\n\
                    Bo,BO@example.com,NY,US,no,3\n\
                    Cy,,TX,US,maybe,1\n";
        let rows = rows(text);
        let bo = rows[0].as_ref().unwrap();
        assert_eq!(bo.customer_id, "bo@example.com");
        assert_eq!(bo.state.as_deref(), Some("NY"));
        assert_eq!(bo.opted_in, Some(false));
        assert_eq!(bo.lifetime_spend_cents, Some(300));
        assert!(!bo.replace_tags);
        assert!(rows[1].is_err(), "no id, e-mail or phone");
    }
}
