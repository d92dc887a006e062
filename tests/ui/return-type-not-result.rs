use resilience_runtime::resilient;

#[resilient]
async fn fetch() -> Option<u32> {
    Some(1)
}

fn main() {}
