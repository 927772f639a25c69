import ArgumentParser
import Engine
import Training

@main
struct Sambench: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "sambench",
        abstract: "Does SAM make a network robust to label noise? Train and measure it on your CPU.",
        discussion: """
        sambench trains CIFAR ResNets and Wide-ResNets with its own engine (oneDNN on the \
        blocked layout, checked against PyTorch) and measures sharpness-aware minimization \
        against SGD.

        Start with:
          sambench run suites/quick.toml     # a small suite on synthetic data
          sambench runs                      # what it stored
          sambench train --model tiny --dataset synthetic --epochs 3
          sambench bench --model resnet20
        """,
        version: SambenchVersion.string,
        subcommands: [RunCommand.self, RunsCommand.self, ReportCommand.self, CheckCommand.self, MergeCommand.self, SlurmCommand.self, Train.self, EvalCommand.self, Bench.self, DataCommand.self, NoiseCommand.self,
                      WorkerCommand.self]
    )
}
