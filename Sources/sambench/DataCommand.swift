import ArgumentParser
import Datasets
import Foundation

struct DataCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "data",
        abstract: "Download and verify CIFAR-10 / CIFAR-100.",
        discussion: """
        The data directory is --data-dir, else $SAMBENCH_DATA, else $XDG_DATA_HOME/sambench, \
        else ~/.local/share/sambench. Datasets live there in their official binary layouts: \
        cifar-10-batches-bin/ and cifar-100-binary/.
        """,
        subcommands: [DownloadData.self, VerifyData.self]
    )
}

