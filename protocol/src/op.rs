//! Opcodes and roles: which operations exist and who may run them.

/// An operation. The numbering is the wire's (`docs/protocol.md`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Opcode {
    /// Version negotiation and authentication; the first request.
    Hello = 0x01,
    /// Echo.
    Ping = 0x02,
    /// The registry as JSON.
    RegistryGet = 0x10,
    /// The diff a spec would apply.
    RegistryPlan = 0x11,
    /// Apply a spec.
    RegistryApply = 0x12,
    /// The audit log.
    RegistryHistory = 0x13,
    /// A batch of rows.
    Put = 0x20,
    /// A batch of tombstones.
    Delete = 0x21,
    /// Features of many keys of several groups.
    GetSlate = 0x30,
    /// Every version of one key in a time range.
    History = 0x31,
    /// Server and engine counters.
    Stats = 0x40,
    /// Opens a bulk import session on this connection.
    ImportBegin = 0x50,
    /// A batch of rows for an import session.
    ImportRows = 0x51,
    /// Makes everything an import session sent visible at once.
    ImportCommit = 0x52,
    /// Discards an import session.
    ImportAbort = 0x53,
    /// Streams a consistent snapshot of a group, or its history, in chunks.
    Export = 0x54,
    /// Features of many keys of one group, each as of its own time.
    PitLookup = 0x55,
}

impl Opcode {
    /// Whether running the operation twice has the effect of running it
    /// once, so a client may resend it after a lost connection.
    pub fn is_idempotent(self) -> bool {
        !matches!(
            self,
            Opcode::Put
                | Opcode::Delete
                | Opcode::RegistryApply
                | Opcode::ImportBegin
                | Opcode::ImportRows
                | Opcode::ImportCommit
                | Opcode::ImportAbort
        )
    }

    /// Every opcode, in wire order.
    pub const ALL: [Opcode; 17] = [
        Opcode::Hello,
        Opcode::Ping,
        Opcode::RegistryGet,
        Opcode::RegistryPlan,
        Opcode::RegistryApply,
        Opcode::RegistryHistory,
        Opcode::Put,
        Opcode::Delete,
        Opcode::GetSlate,
        Opcode::History,
        Opcode::Stats,
        Opcode::ImportBegin,
        Opcode::ImportRows,
        Opcode::ImportCommit,
        Opcode::ImportAbort,
        Opcode::Export,
        Opcode::PitLookup,
    ];

    /// The opcode with wire value `v`, if there is one.
    pub fn from_u8(v: u8) -> Option<Opcode> {
        Opcode::ALL.into_iter().find(|op| *op as u8 == v)
    }

    /// The operation's name as the spec writes it (`GET_SLATE`).
    pub fn name(self) -> &'static str {
        match self {
            Opcode::Hello => "HELLO",
            Opcode::Ping => "PING",
            Opcode::RegistryGet => "REGISTRY_GET",
            Opcode::RegistryPlan => "REGISTRY_PLAN",
            Opcode::RegistryApply => "REGISTRY_APPLY",
            Opcode::RegistryHistory => "REGISTRY_HISTORY",
            Opcode::Put => "PUT",
            Opcode::Delete => "DELETE",
            Opcode::GetSlate => "GET_SLATE",
            Opcode::History => "HISTORY",
            Opcode::Stats => "STATS",
            Opcode::ImportBegin => "IMPORT_BEGIN",
            Opcode::ImportRows => "IMPORT_ROWS",
            Opcode::ImportCommit => "IMPORT_COMMIT",
            Opcode::ImportAbort => "IMPORT_ABORT",
            Opcode::Export => "EXPORT",
            Opcode::PitLookup => "PIT_LOOKUP",
        }
    }

    /// The least role that may run the operation.
    pub fn required_role(self) -> Role {
        match self {
            Opcode::Put | Opcode::Delete => Role::Write,
            Opcode::ImportBegin
            | Opcode::ImportRows
            | Opcode::ImportCommit
            | Opcode::ImportAbort => Role::Write,
            Opcode::RegistryApply => Role::Admin,
            _ => Role::Read,
        }
    }
}

/// What a token may do. Each role includes the ones before it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(u8)]
pub enum Role {
    /// Slates, history, stats, registry reads and plans.
    Read = 1,
    /// Also puts and deletes.
    Write = 2,
    /// Also registry applies.
    Admin = 3,
}

impl Role {
    /// The role with wire code `v`.
    pub fn from_u8(v: u8) -> Option<Role> {
        match v {
            1 => Some(Role::Read),
            2 => Some(Role::Write),
            3 => Some(Role::Admin),
            _ => None,
        }
    }

    /// Whether this role may run `op`.
    pub fn permits(self, op: Opcode) -> bool {
        self >= op.required_role()
    }

    /// The role's name, as configs write it.
    pub fn name(self) -> &'static str {
        match self {
            Role::Read => "read",
            Role::Write => "write",
            Role::Admin => "admin",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opcodes_round_trip_and_unknown_values_are_none() {
        for op in Opcode::ALL {
            assert_eq!(Opcode::from_u8(op as u8), Some(op));
        }
        assert_eq!(Opcode::from_u8(0x00), None);
        assert_eq!(Opcode::from_u8(0x5f), None);
    }

    #[test]
    fn roles_include_the_ones_before() {
        assert!(Role::Read.permits(Opcode::GetSlate));
        assert!(!Role::Read.permits(Opcode::Put));
        assert!(Role::Write.permits(Opcode::Delete));
        assert!(!Role::Write.permits(Opcode::RegistryApply));
        assert!(Role::Admin.permits(Opcode::RegistryApply));
        assert!(Role::Read.permits(Opcode::RegistryPlan));
    }
}
