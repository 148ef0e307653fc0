//! A Klaviyo list export CSV: one row per member of one list (`--list`),
//! matched to customers by external id, e-mail or phone, with header names
//! matched without case.

use super::csvfile::{Columns, cell, check_id, require_any};
use crate::proto::CustomerKey;

/// Where each field is in one file.
pub struct Layout {
    external_id: Option<usize>,
    email: Option<usize>,
    phone: Option<usize>,
}

impl Layout {
    /// Finds the columns; a file with no way to name a member is refused.
    pub fn new(headers: &csv::StringRecord) -> Result<Self, String> {
        let columns = Columns::new(headers);
        let layout = Layout {
            external_id: columns.find(&["external id", "external_id", "externalid"]),
            email: columns.find(&["email", "email address", "e-mail"]),
            phone: columns.find(&["phone number", "phone", "phone_number"]),
        };
        require_any(
            &[layout.external_id, layout.email, layout.phone],
            "`External ID`, `Email` or `Phone Number`",
            "Klaviyo list export",
        )?;
        Ok(layout)
    }

    /// One row as the key of the member it names.
    pub fn member(&self, row: &csv::StringRecord) -> Result<CustomerKey, String> {
        let key = CustomerKey {
            customer_id: cell(row, self.external_id).unwrap_or_default(),
            email: cell(row, self.email).unwrap_or_default(),
            phone: cell(row, self.phone).unwrap_or_default(),
        };
        if key.customer_id.is_empty() && key.email.is_empty() && key.phone.is_empty() {
            return Err("no external id, e-mail or phone number".to_owned());
        }
        check_id(&key.customer_id, "the external id")?;
        check_id(&key.email, "the e-mail")?;
        check_id(&key.phone, "the phone number")?;
        Ok(key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_match_without_case_and_rows_need_a_key() {
        let long = "x".repeat(300);
        let text = format!(
            "EMAIL,First Name,phone NUMBER\nann@example.com,Ann,\n,Bo,\n,Cy,'555 555 0101\n{long},Di,\n"
        );
        let mut reader = csv::Reader::from_reader(text.as_bytes());
        let layout = Layout::new(reader.headers().unwrap()).unwrap();
        let members: Vec<_> = reader
            .records()
            .map(|row| layout.member(&row.unwrap()))
            .collect();
        assert_eq!(members[0].as_ref().unwrap().email, "ann@example.com");
        assert!(members[1].is_err());
        assert_eq!(members[2].as_ref().unwrap().phone, "555 555 0101");
        let error = members[3].as_ref().unwrap_err();
        assert!(error.contains("e-mail is longer than 256 bytes"), "{error}");
    }
}
