use resilience_runtime::resilient;

#[derive(Debug)]
struct PlainError;

#[resilient]
async fn fetch() -> Result<u32, PlainError> {
    Ok(1)
}

fn main() {}
