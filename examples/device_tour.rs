//! A tour of level 1: open the best device, move data through its memory,
//! queue asynchronous work on a stream, and read the pool's statistics.
//!
//!     cargo run --release --example device_tour [-- --device cpu|cuda|metal]

use ferrometal::{Buffer, Device, Location};

fn main() -> anyhow::Result<()> {
    let device = match std::env::args()
        .skip_while(|a| a != "--device")
        .nth(1)
        .as_deref()
    {
        None => Device::best()?,
        Some("cpu") => Device::cpu()?,
        Some("cuda") => Device::cuda(0)?,
        Some("metal") => Device::metal(0)?,
        Some(other) => anyhow::bail!("--device must be cpu, cuda or metal, not {other:?}"),
    };
    let info = device.info()?;
    println!(
        "ferrometal {} on {} ({})",
        ferrometal::version(),
        info.location,
        info.name
    );
    println!(
        "  memory: {} MiB total, {} MiB free",
        info.total_memory >> 20,
        info.free_memory >> 20
    );

    // A round trip through device memory.
    let host: Vec<f32> = (0..1_000_000).map(|i| i as f32 * 0.5).collect();
    let mut buffer = Buffer::from_slice(&device, &host)?;
    buffer.fill_range(0, 10, -1.0)?;
    let back = buffer.to_vec()?;
    assert_eq!(&back[..10], &[-1.0; 10]);
    assert_eq!(&back[10..], &host[10..]);
    println!("  round trip of {} floats: ok", back.len());

    // Asynchronous work: the write is staged, so `host` could change at once.
    let stream = device.new_stream()?;
    let mut copy = Buffer::<f32>::zeros(&device, host.len())?;
    copy.write_async(&stream, 0, &host)?;
    let head = copy.read_async(&stream, 0, 4)?.wait()?;
    println!("  on a stream: first values {head:?}");

    // Copies between devices go through the host.
    if device.location() != Location::Cpu {
        let on_cpu = copy.to_device(&Device::cpu()?)?;
        println!("  copied back to the CPU: {} floats", on_cpu.len());
    }

    let stats = device.pool_stats()?;
    println!(
        "  pool: {} KiB in use, {} KiB cached, peak {} KiB, {} allocations ({} from the system)",
        stats.bytes_in_use >> 10,
        stats.bytes_cached >> 10,
        stats.peak_bytes_in_use >> 10,
        stats.allocations,
        stats.system_allocations
    );

    // Errors name the function and argument.
    let mut out = [0.0f32; 8];
    if let Err(error) = buffer.read(999_996, &mut out) {
        println!("  an out-of-range read says: {error}");
    }
    Ok(())
}
