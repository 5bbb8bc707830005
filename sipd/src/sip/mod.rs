//! SIP messages: parsing with limits, typed accessors, building responses, transactions.
