import ArgumentParser
import Foundation
import Runner

struct WorkerCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "worker", abstract: "Internal: one run for `sambench run`.",
                                                    shouldDisplay: false)
    @Option(help: "The job, as JSON.") var job: String

    func run() throws {
        enableConvolutionTuning()
        let j = try JSONDecoder().decode(WorkerJob.self, from: Data(job.utf8))
        let status = Worker.run(j)
        if status != 0 { throw ExitCode(status) }
    }
}

