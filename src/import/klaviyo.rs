//! A Klaviyo list export CSV: one row per member of one list (`--list`),
//! matched to customers by external id, e-mail or phone, with header names
//! matched without case.

use super::csvfile::{Columns, cell};
use crate::proto::CustomerKey;

/// Where each field is in one file.
pub struct Layout {
    external_id: Option<usize>,
    email: Option<usize>,
    phone: Option<usize>,
}

impl Layout {
    pub fn new(headers: &csv::StringRecord) -> Result<Self, String> {
        let columns = Columns::new(headers);
        let layout = Layout {
            external_id: columns.find(&["external id", "external_id", "externalid"]),
            email: columns.find(&["email", "email address", "e-mail"]),
            phone: columns.find(&["phone number", "phone", "phone_number"]),
        };
        if layout.external_id.is_none() && layout.email.is_none() && layout.phone.is_none() {
            return Err(
                "no `External ID`, `Email` or `Phone Number` column: is this a Klaviyo list export?"
                    .to_owned(),
            );
        }
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
        Ok(key)
    }
}

/// The id of a member no customer matched: its external id, else its
/// e-mail (lower-case), else its phone, as the Shopify import names them.
pub fn new_customer_id(key: &CustomerKey) -> String {
    if !key.customer_id.is_empty() {
        key.customer_id.clone()
    } else if !key.email.is_empty() {
        key.email.to_lowercase()
    } else {
        key.phone.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_match_without_case_and_rows_need_a_key() {
        let text = "EMAIL,First Name,phone NUMBER\nann@example.com,Ann,\n,Bo,\n,Cy,'555 555 0101\n";
        let mut reader = csv::Reader::from_reader(text.as_bytes());
        let layout = Layout::new(reader.headers().unwrap()).unwrap();
        let members: Vec<_> = reader
            .records()
            .map(|row| layout.member(&row.unwrap()))
            .collect();
        assert_eq!(members[0].as_ref().unwrap().email, "ann@example.com");
        assert!(members[1].is_err());
        assert_eq!(members[2].as_ref().unwrap().phone, "555 555 0101");
        assert_eq!(
            new_customer_id(members[2].as_ref().unwrap()),
            "555 555 0101"
        );
    }
}
